"""The studio's Streamlit app: ``studio ui`` runs it. Navigation only; pages arrange widgets."""

import streamlit as st

st.set_page_config(page_title="Shapes Video Studio", page_icon="🎬", layout="wide")

pages = [
    st.Page("pages/generate.py", title="Generate", icon="🎬", default=True),
    st.Page("pages/storyboard.py", title="Storyboard", icon="🎞️"),
    st.Page("pages/elements.py", title="Elements", icon="🧩"),
    st.Page("pages/gallery.py", title="Gallery", icon="🖼️"),
]
st.navigation(pages).run()
