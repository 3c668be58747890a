"""The Streamlit app (`streamlit run app/main.py`): UI only; the work is done by fer_core."""
