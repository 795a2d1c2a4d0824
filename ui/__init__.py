"""QVL Studio's Gradio front end: one module per tab, plus the app shell."""
