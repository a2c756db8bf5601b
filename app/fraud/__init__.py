"""The fraud domain: the model's features and the decision rule."""
