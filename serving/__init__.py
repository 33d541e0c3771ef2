"""The serving API: a FastAPI app (`serving.app.create_app`) and `cashback serve`."""
