from .flags import Command, add_device, add_quiet, add_trust, default, given


def arguments(p):
    p.add_argument("model", help="model.safetensors")
    serving = "serve"  # the defaults below are ServeOptions' (cli_text records them)
    p.add_argument("--host", help=f"address to listen on ({default(serving, 'host')}: this machine only)")
    p.add_argument("--port", type=int, help=f"{default(serving, 'foreground_port')}; 0 picks a free port "
                                            "(distillab.serve() in Python, in the background, picks one by default)")
    p.add_argument("--output", help=f"what a client gets: probs, topk:K or label ({default(serving, 'output')})")
    p.add_argument("--token-file", help="a file holding a bearer token every request must carry")
    p.add_argument("--max-batch", type=int, help=f"rows per request ({default(serving, 'max_batch')})")
    p.add_argument("--rate", type=float, help="requests per second allowed (default unlimited)")
    p.add_argument("--noise", type=float,
                   help=f"std of Gaussian noise on the log-probabilities ({default(serving, 'noise')})")
    p.add_argument("--round", type=int, help="decimals the probabilities are rounded to (default: not rounded)")
    p.add_argument("--seed", type=int, help=f"seed of the noise ({default(serving, 'seed')})")
    p.add_argument("--request-timeout", type=float, help="seconds a client has to send a whole request, from its "
                                                         "first byte or its connection's opening "
                                                         f"({default(serving, 'request_timeout')})")
    p.add_argument("--max-connections", type=int, help="connections open at once; beyond it a new one is answered "
                                                       f"503 and closed ({default(serving, 'max_connections')})")
    add_device(p)
    add_trust(p)
    add_quiet(p)


def run(a):
    from ..api import serve

    serve(a.model, host=a.host, port=a.port, output=a.output, token_file=a.token_file, max_batch=a.max_batch,
          rate=a.rate, noise=a.noise, round=a.round, seed=a.seed, request_timeout=a.request_timeout,
          max_connections=a.max_connections, block=True, quiet=a.quiet, trust_code=a.trust_code,
          **given(device=a.device))
    return None


COMMAND = Command(
    name="serve", order=100, help="serve a model's probabilities (never its weights) over HTTP, for "
                                  "'distillab kd --teacher-url'", arguments=arguments, run=run, examples=(
        "distillab serve runs/teacher/model.safetensors --port 8000 --token-file token.txt",
        "distillab serve T.safetensors --output topk:3 --round 3 --noise 0.1 --rate 50 --max-batch 512"))
