"""The web UI: Streamlit pages over the HTTP service (it imports nothing of the model)."""
