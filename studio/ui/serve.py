"""``studio ui``'s server process: ``python -m studio.ui.serve run APP [streamlit options]``.

The same as ``python -m streamlit run …``, except that the studio's worker starts first and
loads the model in the background while streamlit starts (:mod:`studio.ui.warm`): streamlit
runs a page's script only when a browser opens it, so without this the model would load at
the first visit, and the first click would wait for it. The terminal says when the model is
loading and when it is ready; the pages say the same in their sidebar.
"""

from __future__ import annotations

import sys
import threading

from studio.ui.warm import configured, worker


def _announce(w) -> None:
    status = w.wait_model()
    if status.state == "ready":
        print(
            f"studio: model ready (loaded in {status.load_s:.1f} s): the first clip starts at once",
            flush=True,
        )
    else:
        print(f"studio: the model could not be loaded: {status.error}", flush=True)


def main() -> None:
    home, model = configured()
    print(f"studio: loading the model {model} …", flush=True)
    w = worker(home, model)
    threading.Thread(target=_announce, args=(w,), daemon=True).start()

    from streamlit.web.cli import main as streamlit_main

    # as `python -m streamlit`: streamlit reads its command line from sys.argv
    sys.argv = ["streamlit", *sys.argv[1:]]
    streamlit_main(prog_name="streamlit")


if __name__ == "__main__":
    main()
