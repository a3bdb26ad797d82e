"""The studio's Streamlit app: ``studio ui`` runs it. Navigation only; pages arrange widgets."""

import streamlit as st

st.set_page_config(page_title="Shapes Video Studio", page_icon="🎬", layout="wide")
# clips are shown enlarged pixel by pixel (studio.ui.state.upscale); on a high-density
# screen the browser enlarges them again: keep that crisp too
st.html("<style>img[alt^='Clip:'] { image-rendering: pixelated; }</style>")

pages = [
    st.Page("pages/generate.py", title="Generate", icon=":material/movie:", default=True),
    st.Page("pages/storyboard.py", title="Storyboard", icon=":material/view_timeline:"),
    st.Page("pages/elements.py", title="Elements", icon=":material/extension:"),
    st.Page("pages/gallery.py", title="Gallery", icon=":material/photo_library:"),
]
st.navigation(pages).run()
