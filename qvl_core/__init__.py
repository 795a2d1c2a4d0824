"""QVL Studio core: the model session, input preparation and parsers. Never imports Gradio."""

__version__ = "0.1.0"
