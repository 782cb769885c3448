"""One router per resource; each route calls one workflow function and maps its result to a response."""
