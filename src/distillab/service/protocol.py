"""The teacher service's wire format, shared by the server (``server.py``) and the client (``client.py``):

    GET  /health   {"status": "ok"}                                       (never needs the token)
    GET  /info     what a client needs: input shape, classes, normalisation, output kind and the limits
    POST /predict  inputs (N, C, H, W) as JSON {"inputs": [...]} or safetensors bytes {"inputs": float32}
                   -> probs | topk_index + topk_prob | labels, as safetensors when Accept asks for
                   application/octet-stream, JSON otherwise
    GET  /metrics  Prometheus text: requests by path and status, rows answered, /predict latency

Errors are JSON ``{"error": "one line"}``. The server feeds the model exactly what it receives: clients normalise
their inputs with the ``normalisation`` that /info gives.
"""

SERVICE_FORMAT = "distillab.teacher-service"  # /info's "format": what a client checks first
SERVICE_VERSION = 1
ROUTES = ("/health", "/info", "/predict", "/metrics")
