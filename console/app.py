"""The Session Mesh console: `streamlit run console/app.py` with MESH_ROUTER and MESH_TOKEN set.

Nothing shows before a login: the console password (MESH_CONSOLE_PASSWORD, read-only) or the
tenant's API token (operator: stop, log out, drain)."""

from __future__ import annotations

import time

import streamlit as st

from console.auth import OPERATOR, ROLE_KEY, role_for
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


def login() -> None:
    st.title("Session Mesh console")
    with st.form("login"):
        password = st.text_input("Console password or API token", type="password")
        if st.form_submit_button("Log in"):
            role = role_for(password, settings)
            if role is None:
                time.sleep(1.0)  # slows guessing down
                st.error("Wrong password.")
            else:
                st.session_state[ROLE_KEY] = role
                st.rerun()
    st.caption(
        "The console password (MESH_CONSOLE_PASSWORD) gives a read-only view; the tenant's "
        "API token also allows stop, log out and drain."
    )


problem = ""
try:
    settings = ConsoleSettings.from_env()
except ConfigError as e:
    problem = str(e)

if problem:
    st.navigation([st.Page(setup_needed, title="Setup", url_path="setup")], position="hidden").run()
else:
    logged_in = ROLE_KEY in st.session_state
    # The pages are declared even before a login, so a page's URL opens it after the login.
    page = st.navigation(
        [
            st.Page("pages/overview.py", title="Overview", icon=":material/hub:", default=True),
            st.Page("pages/latency.py", title="Latency", icon=":material/timer:"),
            st.Page("pages/sessions.py", title="Sessions", icon=":material/qr_code_2:"),
            st.Page("pages/planner.py", title="Tier planner", icon=":material/calculate:"),
            st.Page("pages/webhooks.py", title="Webhooks", icon=":material/webhook:"),
        ],
        position="sidebar" if logged_in else "hidden",
    )
    if not logged_in:
        login()
    else:
        role = st.session_state[ROLE_KEY]
        st.sidebar.caption(f"Router `{settings.router}`; signed in as {role}")
        if st.sidebar.button("Log out of the console"):
            del st.session_state[ROLE_KEY]
            st.rerun()
        if role != OPERATOR:
            st.sidebar.caption("Read-only: log in with the API token to stop, log out or drain.")
        page.run()
