"""ipywidgets panels: thin layers over library calls, holding no logic of their own."""
