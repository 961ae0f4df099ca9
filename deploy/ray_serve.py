"""refit behind Ray Serve: scale-out with Ray Serve's own API (deployments, replicas, autoscaling, its proxy).

    pip install "refit-ml[export,serve]" "ray[serve]"
    REFIT_REGISTRY=/shared/registry serve run deploy.ray_serve:app          # or: serve deploy serve_config.yaml
    curl -X POST localhost:8000/predict -H 'content-type: application/json' -d '{"text": "great film"}'

Each Ray Serve replica holds one `refit.serve.Server`: the verified champion in its serving slot, refit's
micro-batcher, a capture writer into REGISTRY/inbox (each replica writes its own files: names are unique) and
the registry watcher that hot-swaps the replica when the champion moves. Ray Serve routes requests between
replicas, autoscales them and restarts unhealthy ones; refit keeps what Ray Serve has no notion of (capture,
feedback, verified hot swap). The registry folder must be on storage every Ray node sees (NFS or similar).

Not exercised in refit's test suite (Ray Serve is not among its dependencies); `refit serve` is.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from ray import serve

from refit.serve import FeedbackError, ServeOptions, Server

api = FastAPI(title="refit on Ray Serve")


class PredictIn(BaseModel):
    text: str | None = None
    texts: list[str] | None = None


class FeedbackIn(BaseModel):
    request_id: str
    label: str | int


@serve.deployment(
    ray_actor_options={"num_cpus": 2},  # ONNX Runtime uses the replica's cores inside each batch
    autoscaling_config={"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 32},
    max_ongoing_requests=64,  # enough concurrent requests per replica for refit's batcher to fill batches
    health_check_period_s=10,
    graceful_shutdown_timeout_s=30,
)
@serve.ingress(api)
class RefitClassifier:
    def __init__(self, registry_root: str, alias: str = "champion", store_texts: bool = True) -> None:
        self.server = Server(
            ServeOptions(
                registry_root=registry_root,
                alias=alias,
                store_texts=store_texts,
                max_batch_size=32,
                max_wait_ms=5.0,
                watch_interval_s=5.0,
            )
        )

    @api.post("/predict")
    async def predict(self, body: PredictIn):
        if (body.text is None) == (body.texts is None):
            raise HTTPException(422, "Send exactly one of 'text' or 'texts'.")
        out = await self.server.predict([body.text] if body.text is not None else body.texts)
        return out[0] if body.text is not None else {"predictions": out}

    @api.post("/feedback")
    async def feedback(self, body: FeedbackIn):
        try:
            return {"accepted": self.server.add_feedback([(body.request_id, body.label)])}
        except FeedbackError as e:
            raise HTTPException(422, str(e)) from None

    @api.get("/version")
    async def version(self):
        return {"version_id": self.server.slot.version_id, "backend": self.server.slot.backend}

    def check_health(self) -> None:
        """Ray Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        if not self.server.accepting:
            raise RuntimeError("refit server is shutting down")

    def __del__(self) -> None:
        """Ray Serve's replica shutdown hook: answer queued texts and finalise the capture files."""
        self.server.close()


app = RefitClassifier.bind(registry_root=os.environ.get("REFIT_REGISTRY", "registry"))
