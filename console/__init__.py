"""Ops console (Streamlit): capacity, latency, sessions with their live QR, and the tier planner."""
