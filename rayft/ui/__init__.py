"""`rayft ui`: a web page over the library (rayft.ui.page) to start runs, watch them, read sweeps
and chat with served models."""
