"""The studio's HTTP API (``studio serve``): FastAPI over the same job queue and gallery as
the web UI, so a job submitted here shows on the UI's pages and the other way round.

Only request and response shapes live here (pydantic models, strict types, unknown fields
refused); every check of what a job may ask for and all the work are the functions of
:mod:`studio.jobs` and :mod:`studio.gallery` that the UI pages call. Endpoints and examples:
docs/api.md; interactive docs at ``/docs`` on a running server.

Limits that protect the machine: at most :data:`~studio.jobs.MAX_QUEUED` jobs wait (a
submission past that is answered 429 and stores nothing), and a request body is at most
:data:`MAX_BODY_BYTES` with its length declared (413, 411).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from .errors import StudioError


class MissingExtra(StudioError, ImportError):
    """An optional dependency of the API is not installed (one line, for the CLI)."""


try:
    import uvicorn
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:
    raise MissingExtra(
        f'the HTTP API needs {exc.name or "fastapi and uvicorn"}: pip install -e ".[api]"'
    ) from None

from .gallery import KINDS, STATUSES, Gallery, Job  # noqa: E402
from .generate import GenerateRequest, StoryboardOptions  # noqa: E402
from .jobs import (  # noqa: E402
    MAX_QUEUED,
    QueueFull,
    Worker,
    rerun,
    submit_generate,
    submit_storyboard,
)
from .shipped import configured_scorer_spec, default_model_path  # noqa: E402

log = logging.getLogger(__name__)

# A generate request is well under 2 KB and the largest storyboard the queue accepts (256
# one-frame scenes of 1000-character prompts) about 270 KB: a larger body is refused before
# it is parsed.
MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER_S = 10  # what a 429 tells a client to wait
MAX_PAGE = 100  # jobs per GET /jobs page
JSON_BODIES = ("/jobs/generate", "/jobs/storyboard")  # the endpoints that read a JSON body


def _default(cls, name: str) -> Any:
    """The default of dataclass field ``name``: one place holds every default."""
    return next(f.default for f in fields(cls) if f.name == name)


# ---------------------------------------------------------------------------- models
class _Strict(BaseModel):
    # strict: "16" is not 16 and true is not 1; a typo'd field name is an error, not ignored
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateIn(_Strict):
    """A clip, as on the UI's Generate page (ranges: studio.jobs.check_generate_request)."""

    prompt: str = Field(description="what happens; at most 1000 characters")
    negative_prompt: str | None = None
    seed: int = Field(_default(GenerateRequest, "seed"), description="0 to 2**63-1")
    steps: int = Field(_default(GenerateRequest, "steps"), description="denoising steps")
    guidance: float = Field(_default(GenerateRequest, "guidance"), description="0 to 50")
    frames: int = Field(_default(GenerateRequest, "frames"), description="1 to 64")
    fps: int = Field(_default(GenerateRequest, "fps"), description="1 to 120")
    image_first: bool | None = Field(
        None, description="frame 0 as an image first; null: the model's own setting"
    )
    best_of: int = Field(
        1, description="candidates (seeds seed…seed+N-1), the scorer's best kept; 1 to 8"
    )
    lora: str | None = Field(
        None, description="a LoRA adapter on the model, PATH[:SCALE] (a folder on the server)"
    )


class SceneIn(_Strict):
    prompt: str
    frames: int = Field(description="1 to 64; the film at most 256")


class StoryboardIn(_Strict):
    """A film, as on the UI's Storyboard page (checks: studio.jobs.check_storyboard_request)."""

    scenes: list[SceneIn]
    seed: int = _default(StoryboardOptions, "seed")
    steps: int = _default(StoryboardOptions, "steps")
    guidance: float = _default(StoryboardOptions, "guidance")
    image_first: bool | None = None
    candidates: int = Field(
        _default(StoryboardOptions, "candidates"),
        description="draws per continued window, the most continuous kept; 1 to 4",
    )
    lora: str | None = Field(
        None, description="a LoRA adapter on the model, PATH[:SCALE] (a folder on the server)"
    )


class Progress(BaseModel):
    done: int
    total: int = Field(description="0 until the job starts")
    fraction: float
    unit: Literal["steps", "windows"]


class JobOut(BaseModel):
    id: str
    kind: Literal[KINDS]
    status: Literal[STATUSES]
    prompt: str
    seed: int | None
    created: float = Field(description="Unix time")
    started: float | None
    finished: float | None
    queue_position: int | None = Field(description="1 = runs next; null when not waiting")
    progress: Progress
    cancel_requested: bool
    error: str | None
    request: dict[str, Any] = Field(description="everything needed to run it again")
    scores: dict[str, Any] = Field(description="best-of-N: every candidate's score")
    links: dict[str, str] = Field(description="this job's endpoints: self, cancel, video…")


class JobList(BaseModel):
    jobs: list[JobOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="the next page's offset; null on the last")


class WorkerOut(BaseModel):
    running: bool
    holds_lock: bool = Field(description="false: another process (e.g. `studio ui`) runs jobs")
    current: str | None
    model: Literal["off", "loading", "ready", "failed"] = Field(
        description="the model, loaded as the server starts: a job queued while it loads "
        "starts when it is ready"
    )
    model_error: str | None = Field(None, description="why the model could not be loaded")


class Health(BaseModel):
    status: Literal["ok"]
    queued: int
    max_queued: int
    worker: WorkerOut | None


class ErrorOut(BaseModel):
    detail: str


ERRORS = {
    404: {"model": ErrorOut, "description": "no such job"},
    409: {"model": ErrorOut, "description": "not possible in the job's state"},
    411: {"model": ErrorOut, "description": "a chunked body (send Content-Length)"},
    413: {"model": ErrorOut, "description": f"body over {MAX_BODY_BYTES} bytes"},
    422: {"model": ErrorOut, "description": "a request no model can run"},
    429: {"model": ErrorOut, "description": "the queue is full (Retry-After)"},
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: ERRORS[code] for code in codes}


# ---------------------------------------------------------------------------- app
def _where(loc: list) -> str:
    """``["body", "scenes", 0, "frames"]`` → ``scenes.0.frames`` (``body`` for the whole)."""
    return ".".join(str(p) for p in loc[1:]) or (str(loc[0]) if loc else "request")


def job_out(gallery: Gallery, job: Job) -> JobOut:
    base = f"/jobs/{job.id}"
    links = {"self": base}
    if job.active:
        links["cancel"] = f"{base}/cancel"
    else:
        links["rerun"] = f"{base}/rerun"
    if job.status == "done":
        links |= {"video": f"{base}/video", "sidecar": f"{base}/sidecar"}
        if job.thumbnail:
            links["thumbnail"] = f"{base}/thumbnail"
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,
        prompt=job.prompt,
        seed=job.seed,
        created=job.created,
        started=job.started,
        finished=job.finished,
        queue_position=gallery.queue_position(job.id),
        progress=Progress(
            done=job.done_steps,
            total=job.total_steps,
            fraction=job.fraction,
            unit="windows" if job.kind == "storyboard" else "steps",
        ),
        cancel_requested=job.cancel,
        error=job.error,
        request=job.request,
        scores=job.scores,
        links=links,
    )


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets 413 before anything reads it. The
    server (h11) delivers no more than the declared Content-Length, so that header is all
    there is to check; a body streamed without one (chunked) gets 411; a job's body not
    declared as JSON gets 422."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refused = None
            if length is None and b"transfer-encoding" in headers:
                refused = (411, "send the body with a Content-Length header, not chunked")
            elif length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                refused = (413, f"the request body is over {self.max_bytes} bytes")
            elif (
                scope["method"] == "POST"
                and scope["path"] in JSON_BODIES
                and b"json" not in headers.get(b"content-type", b"").lower()
            ):  # whatever the FastAPI version would make of it
                refused = (422, "send the body as JSON with Content-Type: application/json")
            if refused:
                response = JSONResponse({"detail": refused[1]}, status_code=refused[0])
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def check_lora_roots(gallery: Gallery, roots: list[Path] | None) -> list[Path]:
    """The folders the API reads LoRA adapters from: ``roots`` (``studio serve --lora-dir``),
    else the studio's home and the folder the server was started in, unless that is ``/`` or
    the user's home (a service started there would expose every file in it). A root that
    broad, named explicitly, is refused."""
    broad = {Path("/").resolve(), Path.home().resolve()}
    if roots is None:
        cwd = Path.cwd().resolve()
        return [gallery.home.resolve(), *([cwd] if cwd not in broad else [])]
    roots = [Path(r).expanduser().resolve() for r in roots]
    for root in roots:
        if root in broad:
            raise StudioError(
                f"--lora-dir {root}: too broad (every file in it could be named); give the "
                "folder that holds the adapters"
            )
    return roots


def create_app(
    home: str | Path | None = None,
    model: str | Path | None = None,
    *,
    scorer: str | None | Literal["env"] = "env",
    max_queued: int = MAX_QUEUED,
    start_worker: bool = True,
    poll_s: float = 0.5,
    lora_roots: list[Path] | None = None,
) -> FastAPI:
    """The API over the studio at ``home`` (default: ``$STUDIO_HOME`` or
    ``~/.local/share/shapes-video-studio``), running jobs with ``model`` (default: the
    shipped one or ``$STUDIO_MODEL``).

    scorer: best-of-N's scorer spec; ``"env"`` finds it as ``studio ui`` does
        (:func:`studio.shipped.configured_scorer_spec`), None refuses best-of-N.
    max_queued: submissions are answered 429 while this many jobs wait.
    start_worker: start this process's worker with the app (it runs jobs only while it
        holds the machine's lock, so beside a running ``studio ui`` one of the two does).
    lora_roots: the only folders a job's LoRA adapter may be in (a client must not make the
        server open any file it names): :func:`check_lora_roots`.
    """
    gallery = Gallery(home)
    lora_roots = check_lora_roots(gallery, lora_roots)
    model = Path(model) if model else default_model_path()
    if not (model / "model_index.json").is_file():
        raise StudioError(f"no model at {model}: expected a diffusers folder with model_index.json")
    scorer = configured_scorer_spec() if scorer == "env" else scorer
    submit_lock = threading.Lock()  # room check + enqueue as one step in this process

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker = (
            Worker(gallery, model=model, poll_s=poll_s, preload=True).start()
            if start_worker
            else None
        )
        app.state.worker = worker
        try:
            yield
        finally:
            if worker is not None:
                worker.stop(timeout=10)
                if worker.current is not None:
                    log.warning(
                        "job %s was still running: the next worker queues it again",
                        worker.current,
                    )

    app = FastAPI(
        title="Shapes Video Studio API",
        version="1",
        description="Queue text-to-video and storyboard jobs, follow them, download the "
        "results. The same queue and gallery as `studio ui`. See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.gallery = gallery
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(StudioError)
    async def studio_error(request: Request, exc: StudioError) -> JSONResponse:
        if isinstance(exc, QueueFull):
            headers = {"Retry-After": str(RETRY_AFTER_S)}
            return JSONResponse({"detail": str(exc)}, status_code=429, headers=headers)
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # one readable line in `detail` like every other error; the parts for programs in
        # `errors`, without the offending input (it may be large)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    def get_job(job_id: str) -> Job:
        job = gallery.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id[:64]!r} in this studio")
        return job

    def queue(submit) -> JSONResponse:
        with submit_lock:
            job = submit()  # its first check: the queue's room (QueueFull: 429)
        body = job_out(gallery, job).model_dump(mode="json")
        return JSONResponse(body, status_code=202, headers={"Location": f"/jobs/{job.id}"})

    def job_file(job: Job, column: str) -> Path:
        if job.status != "done":
            raise HTTPException(409, f"job {job.id} is {job.status}: it has no {column}")
        folder = "thumbs" if column == "thumbnail" else "videos"
        path = gallery.path(folder, getattr(job, column))
        if path is None or not path.is_file():
            raise HTTPException(404, f"the {column} of job {job.id} is missing from the store")
        return path

    # ------------------------------------------------------------------ endpoints
    @app.get("/health", response_model=Health, tags=["studio"])
    def health() -> Health:
        """The server answers; how many jobs wait; this process's worker."""
        worker = app.state.worker
        out = None
        if worker is not None:
            loaded = worker.model_status()
            out = WorkerOut(**vars(worker.status()), model=loaded.state, model_error=loaded.error)
        return Health(
            status="ok",
            queued=len(gallery.search(status="queued", limit=max_queued + 1)),
            max_queued=max_queued,
            worker=out,
        )

    @app.post(
        "/jobs/generate",
        status_code=202,
        response_model=JobOut,
        responses=_errors(411, 413, 422, 429),
        tags=["jobs"],
    )
    def post_generate(body: GenerateIn) -> JSONResponse:
        """Queue a clip. 202 with the job; follow `links.self` until it is done."""
        data = body.model_dump(exclude={"best_of"})
        request = GenerateRequest(**data)
        return queue(
            lambda: submit_generate(
                gallery, request, body.best_of, scorer, None, model, lora_roots, max_queued
            )
        )

    @app.post(
        "/jobs/storyboard",
        status_code=202,
        response_model=JobOut,
        responses=_errors(411, 413, 422, 429),
        tags=["jobs"],
    )
    def post_storyboard(body: StoryboardIn) -> JSONResponse:
        """Queue a multi-scene film (docs/storyboards.md)."""
        scenes = [s.model_dump() for s in body.scenes]
        options = StoryboardOptions(**body.model_dump(exclude={"scenes"}))
        return queue(lambda: submit_storyboard(gallery, scenes, options, lora_roots, max_queued))

    @app.get("/jobs", response_model=JobList, responses=_errors(422), tags=["jobs"])
    def list_jobs(
        request: Request,
        q: str = Query("", max_length=1000, description="text anywhere in the prompt"),
        kind: Literal[KINDS] | None = None,
        status: Literal[STATUSES] | None = Query(None, description="default: every status"),
        limit: int = Query(20, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=2**62),
    ) -> JobList:
        """History, newest first: the UI's gallery, searchable and paged."""
        # a typo (?stauts=done) or a repeated parameter is an error, as in a body
        counts = Counter(name for name, _ in request.query_params.multi_items())
        unknown = sorted(set(counts) - {"q", "kind", "status", "limit", "offset"})
        repeated = sorted(n for n, k in counts.items() if k > 1)
        if unknown or repeated:
            raise HTTPException(
                422,
                (f"unknown query parameter {', '.join(unknown)}; " if unknown else "")
                + (f"given more than once: {', '.join(repeated)}; " if repeated else "")
                + "GET /jobs takes q, kind, status, limit and offset, each once",
            )
        # one more than the page: a page that ends the list exactly has no next one
        jobs = gallery.search(q, kind=kind, status=status, limit=limit + 1, offset=offset)
        return JobList(
            jobs=[job_out(gallery, j) for j in jobs[:limit]],
            limit=limit,
            offset=offset,
            next_offset=offset + limit if len(jobs) > limit else None,
        )

    @app.get("/jobs/{job_id}", response_model=JobOut, responses=_errors(404), tags=["jobs"])
    def get_status(job_id: str) -> JobOut:
        """Status, queue position and progress (steps, or windows for a storyboard)."""
        return job_out(gallery, get_job(job_id))

    @app.post(
        "/jobs/{job_id}/cancel", response_model=JobOut, responses=_errors(404, 409), tags=["jobs"]
    )
    def cancel(job_id: str) -> JobOut:
        """A queued job is cancelled at once; a running one stops at its next step (its
        status turns `cancelled` then, `cancel_requested` is true at once)."""
        job = get_job(job_id)
        if not job.active:
            raise HTTPException(409, f"job {job.id} is already {job.status}: nothing to cancel")
        job = gallery.cancel(job.id)
        if job is None:  # deleted between the two reads
            raise HTTPException(404, f"no job {job_id[:64]!r} in this studio")
        if not job.cancel:  # it finished between the two reads
            raise HTTPException(409, f"job {job.id} is already {job.status}: nothing to cancel")
        return job_out(gallery, job)

    @app.post(
        "/jobs/{job_id}/rerun",
        status_code=202,
        response_model=JobOut,
        responses=_errors(404, 429),
        tags=["jobs"],
    )
    def post_rerun(job_id: str) -> JSONResponse:
        """Queue a job again with exactly the settings it was made with."""
        job = get_job(job_id)
        return queue(lambda: rerun(gallery, job.id, lora_roots, max_queued))

    @app.delete("/jobs/{job_id}", status_code=204, responses=_errors(404, 409), tags=["jobs"])
    def delete(job_id: str) -> Response:
        """Remove a finished job, its video, sidecar and thumbnail; cancel an active one first."""
        job = get_job(job_id)
        try:
            removed = gallery.delete(job.id)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        if not removed:  # another request deleted it meanwhile
            raise HTTPException(404, f"no job {job_id[:64]!r} in this studio")
        return Response(status_code=204)

    @app.get(
        "/jobs/{job_id}/video",
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}}, **_errors(404, 409)},
        tags=["files"],
    )
    def video(job_id: str) -> FileResponse:
        """The MP4 (H.264) of a done job."""
        job = get_job(job_id)
        return FileResponse(
            job_file(job, "video"), media_type="video/mp4", filename=f"{job.id}.mp4"
        )

    @app.get(
        "/jobs/{job_id}/sidecar",
        response_class=FileResponse,
        responses={200: {"content": {"application/json": {}}}, **_errors(404, 409)},
        tags=["files"],
    )
    def sidecar(job_id: str) -> FileResponse:
        """The sidecar JSON: everything needed to make the same video again."""
        job = get_job(job_id)
        path = job_file(job, "sidecar")
        return FileResponse(path, media_type="application/json", filename=f"{job.id}.json")

    @app.get(
        "/jobs/{job_id}/thumbnail",
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}}, **_errors(404, 409)},
        tags=["files"],
    )
    def thumbnail(job_id: str) -> FileResponse:
        """The gallery's thumbnail (the middle frame, enlarged) as PNG."""
        job = get_job(job_id)
        return FileResponse(job_file(job, "thumbnail"), media_type="image/png")

    return app


def server_config(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> uvicorn.Config:
    """How `studio serve` runs the app (the tests run the same)."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    home: str | Path | None = None,
    model: str | Path | None = None,
    lora_dirs: list[str] | None = None,
) -> None:
    """Run the API until Ctrl-C (``studio serve``)."""
    app = create_app(home, model, lora_roots=[Path(d) for d in lora_dirs] if lora_dirs else None)
    uvicorn.Server(server_config(app, host, port)).run()
    worker = app.state.worker
    if worker is not None and worker.current is not None:
        # Its job is mid-generation in a daemon thread; finalising the interpreter under
        # torch's running threads aborts the process ("terminate called…"), so leave now:
        # the job stays 'running' and the next worker queues it again.
        logging.shutdown()
        os._exit(0)
