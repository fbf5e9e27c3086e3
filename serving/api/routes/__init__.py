"""One router per area of the API: scores, the model, stored history, operations."""
