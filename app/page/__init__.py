"""The drawing page: a local web server (server.py), the files it serves (web/), and what the
page asks of the network (explore.py, explain.py, damage.py, training_session.py)."""
