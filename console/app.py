"""The Session Mesh console: `streamlit run console/app.py` with MESH_ROUTER and MESH_TOKEN set."""

from __future__ import annotations

import streamlit as st

from console.errors import ConfigError
from console.settings import ConsoleSettings

st.set_page_config(page_title="Session Mesh console", page_icon=":material/hub:", layout="wide")


def setup_needed() -> None:
    st.title("Session Mesh console")
    st.error(f"The console cannot start: {problem}")
    st.markdown("Start it with the router's address and one tenant's API token:")
    st.code(
        "MESH_ROUTER=127.0.0.1:50051 MESH_TOKEN=<token> \\\n"
        "  .venv/bin/streamlit run console/app.py",
        language="bash",
    )
    st.caption("`make run` writes both to `.run/env`: `source .run/env` first.")


problem = ""
try:
    settings = ConsoleSettings.from_env()
except ConfigError as e:
    problem = str(e)

if problem:
    st.navigation([st.Page(setup_needed, title="Setup", url_path="setup")], position="hidden").run()
else:
    page = st.navigation(
        [
            st.Page("pages/overview.py", title="Overview", icon=":material/hub:", default=True),
            st.Page("pages/latency.py", title="Latency", icon=":material/timer:"),
            st.Page("pages/sessions.py", title="Sessions", icon=":material/qr_code_2:"),
            st.Page("pages/planner.py", title="Tier planner", icon=":material/calculate:"),
        ]
    )
    st.sidebar.caption(f"Router `{settings.router}`")
    page.run()
