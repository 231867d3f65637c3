"""Everything around the learning algorithm: data files, the command line's helpers, saving a
run, pictures, progress lines, predicting your own digits, and the drawing page (app/page/).
The algorithm itself lives at the top level (mlp.py, dense_layer.py, functions.py, optimizers.py,
augment.py) and nn.py drives it; nothing here imports nn.py."""
