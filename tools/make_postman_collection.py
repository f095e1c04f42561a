"""Write ComfyUI_API.postman_collection.json (Postman v2.1). Edit here, then run this script.

Keeping the collection as code keeps its test scripts readable and reviewable; CI runs the result
with newman against `start.py --demo`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "ComfyUI_API.postman_collection.json"
FINAL = '["completed", "failed", "interrupted", "timeout"]'


def request(
    name: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    form: list | None = None,
    tests: str = "",
    pre: str = "",
    headers: dict[str, str] | None = None,
    absolute: bool = False,
) -> dict[str, Any]:
    raw_url = path if absolute else "{{baseUrl}}" + path  # absolute: a whole URL held in a variable
    url_path = [p for p in path.split("?")[0].split("/") if p]
    if path.split("?")[0].endswith("/"):
        url_path.append("")  # keep a trailing slash (ViewComfy's results route has one)
    url: dict[str, Any] = {"raw": raw_url, "host": ["{{baseUrl}}"], "path": url_path}
    if "?" in path:
        url["query"] = [{"key": k, "value": v} for k, v in (kv.split("=") for kv in path.split("?")[1].split("&"))]
    # A URL held whole in a variable must stay raw: split into segments its slashes would be escaped.
    req: dict[str, Any] = {"method": method, "header": [], "url": raw_url if path.startswith("{{") else url}
    for key, value in (headers or {}).items():
        req["header"].append({"key": key, "value": value})
    if body is not None:
        req["header"].append({"key": "Content-Type", "value": "application/json"})
        req["body"] = {"mode": "raw", "raw": json.dumps(body, indent=2), "options": {"raw": {"language": "json"}}}
    if form is not None:
        req["body"] = {"mode": "formdata", "formdata": form}
    item: dict[str, Any] = {"name": name, "request": req, "event": []}
    if pre:
        item["event"].append(
            {"listen": "prerequest", "script": {"type": "text/javascript", "exec": pre.strip().splitlines()}}
        )
    if tests:
        item["event"].append(
            {"listen": "test", "script": {"type": "text/javascript", "exec": tests.strip().splitlines()}}
        )
    return item


def poll_until_final(request_name: str, expect: str, then: str = "", *, name: str = "task", final: str = FINAL) -> str:
    """A test script that repeats its request (200 ms apart) until the task (or v2 ``job``) ends, then
    checks its status; ``then`` runs after, with the answer in the variable ``name``."""
    return f"""
const {name} = pm.response.json();
const polls = Number(pm.collectionVariables.get("polls")) + 1;
pm.collectionVariables.set("polls", polls);
if (!{final}.includes({name}.status) && polls < 100) {{
  setTimeout(() => {{}}, 200);
  pm.execution.setNextRequest("{request_name}");
}} else {{
  pm.collectionVariables.set("polls", 0);
  pm.test("{name} {expect}", () => pm.expect({name}.status).to.eql("{expect}"));
{then}}}
"""


V2_TERMINAL = '["succeeded", "failed", "canceled", "expired"]'


def poll_v2_job(request_name: str, expect: str, then: str = "") -> str:
    return poll_until_final(request_name, expect, then, name="job", final=V2_TERMINAL)


def v2_workflow() -> dict[str, Any]:
    """LoadImage (the uploaded asset, as a core/ASSET reference) → ImageInvert → SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": {"__type": "core/ASSET", "info": {"id": "{{asset_id}}"}}}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "postman_v2"}},
    }


def long_v2_workflow() -> dict[str, Any]:
    workflow = json.loads((OUT.parent / "workflows" / "sd_txt2img_api.json").read_text())
    workflow["3"]["inputs"]["steps"] = 400
    return workflow


V2_ITEMS = [
    request(
        "v2 Health",
        "GET",
        "/api/v2/health",
        tests="""
pm.test("Comfy API v2 answers", () => pm.response.to.have.status(200));
pm.test("backends up", () => pm.expect(pm.response.json().status).to.be.oneOf(["healthy", "degraded"]));
""",
    ),
    request(
        "v2 Upload asset",
        "POST",
        "/api/v2/assets",
        form=[
            {"key": "file", "type": "file", "src": "docs/debugger-loaded.png"},
            {"key": "file_path", "type": "text", "value": "photo.png"},
            {"key": "content_type", "type": "text", "value": "image/png"},
        ],
        tests="""
pm.test("asset stored (201 new, 200 bytes already there)", () => pm.expect(pm.response.code).to.be.oneOf([200, 201]));
const asset = pm.response.json();
pm.test("content-addressed", () => pm.expect(asset.hash).to.match(/^blake3:[0-9a-f]{64}$/));
pm.collectionVariables.set("asset_id", asset.id);
pm.collectionVariables.set("asset_hash", asset.hash);
""",
    ),
    request(
        "v2 Asset by hash",
        "HEAD",
        "/api/v2/assets/by-hash/{{asset_hash}}",
        tests='pm.test("the bytes are known", () => pm.response.to.have.status(200));',
    ),
    request(
        "v2 Submit job",
        "POST",
        "/api/v2/jobs",
        body={"workflow": v2_workflow(), "metadata": {"source": "postman"}},
        headers={"Idempotency-Key": "{{idempotency_key}}"},
        pre='pm.collectionVariables.set("idempotency_key", pm.variables.replaceIn("{{$guid}}"));',
        tests="""
pm.test("job created", () => pm.response.to.have.status(201));
const job = pm.response.json();
const nullable = ["started_at", "completed_at", "progress", "error", "queue_position"];
pm.test("every nullable field present", () => nullable.forEach(k => pm.expect(job).to.have.property(k)));
pm.collectionVariables.set("job_id", job.id);
""",
    ),
    request(
        "v2 Same Idempotency-Key again",
        "POST",
        "/api/v2/jobs",
        body={"workflow": v2_workflow()},
        headers={"Idempotency-Key": "{{idempotency_key}}"},
        tests="""
pm.test("refused: keys are single-use", () => pm.response.to.have.status(422));
pm.test("idempotency_key_reuse", () => pm.expect(pm.response.json().error.code).to.eql("idempotency_key_reuse"));
""",
    ),
    request(
        "v2 Job status",
        "GET",
        "/api/v2/jobs/{{job_id}}",
        tests=poll_v2_job(
            "v2 Job status",
            "succeeded",
            then="""  pm.test("an output", () => pm.expect(job.outputs.length).to.be.above(0));
  pm.test("absolute output URL", () => pm.expect(job.outputs[0].url).to.match(/^https?:\\/\\//));
  pm.collectionVariables.set("v2_output_url", job.outputs[0].url.replace(/^https?:\\/\\/[^/]+/, ""));
""",
        ),
    ),
    request(
        "v2 Output, first bytes",
        "GET",
        "{{v2_output_url}}",
        headers={"Range": "bytes=0-7"},
        tests="""
pm.test("a range", () => pm.response.to.have.status(206));
pm.test("of 8 bytes", () => pm.expect(pm.response.stream.length).to.eql(8));
""",
    ),
    request(
        "v2 List jobs by label",
        "GET",
        "/api/v2/jobs?metadata[source]=postman&limit=10",
        tests="""
pm.test("listed", () => pm.response.to.have.status(200));
const ids = pm.response.json().jobs.map(j => j.id);
pm.test("the job is there", () => pm.expect(ids).to.include(pm.collectionVariables.get("job_id")));
""",
    ),
    request(
        "v2 Job workflow",
        "GET",
        "/api/v2/jobs/{{job_id}}/workflow",
        tests="""
pm.test("the workflow that ran", () => pm.expect(pm.response.json().format).to.eql("api"));
const ran = pm.response.json().workflow;
pm.test("the asset became a file name", () => pm.expect(ran["1"].inputs.image).to.match(/^v2_/));
""",
    ),
    request(
        "v2 Submit long job",
        "POST",
        "/api/v2/jobs",
        body={"workflow": long_v2_workflow()},
        tests="""
pm.test("long job created", () => pm.response.to.have.status(201));
pm.collectionVariables.set("long_job_id", pm.response.json().id);
""",
    ),
    request(
        "v2 Cancel",
        "POST",
        "/api/v2/jobs/{{long_job_id}}/cancel",
        tests="""
pm.test("cancel accepted", () => pm.response.to.have.status(200));
pm.test("canceling or canceled", () => pm.expect(pm.response.json().status).to.be.oneOf(["canceling", "canceled"]));
""",
    ),
    request(
        "v2 Canceled job",
        "GET",
        "/api/v2/jobs/{{long_job_id}}",
        tests=poll_v2_job("v2 Canceled job", "canceled"),
    ),
    request(
        "v2 Delete asset",
        "DELETE",
        "/api/v2/assets/{{asset_id}}",
        tests='pm.test("deleted", () => pm.response.to.have.status(204));',
    ),
]

ITEMS = [
    request(
        "Health",
        "GET",
        "/api/health",
        tests="""
pm.test("ComfyGate answers 200", () => pm.response.to.have.status(200));
pm.test("a ComfyUI backend is reachable", () => {
  const body = pm.response.json();
  pm.expect(body.status).to.be.oneOf(["ok", "degraded"]);
  pm.expect(body.backends.length).to.be.above(0);
});
""",
    ),
    request(
        "Upload workflow",
        "POST",
        "/api/workflow/upload",
        form=[
            {"key": "file", "type": "file", "src": "workflows/image_invert_blur_api.json"},
            {"key": "name", "type": "text", "value": "postman_invert_blur"},
            {"key": "overwrite", "type": "text", "value": "true"},
        ],
        tests="""
pm.test("workflow stored", () => pm.response.to.have.status(200));
const body = pm.response.json();
pm.test("parameters detected", () => pm.expect(body.params.length).to.be.above(0));
pm.collectionVariables.set("workflow_name", body.name);
""",
    ),
    request(
        "List workflows",
        "GET",
        "/api/workflows",
        tests="""
pm.test("the uploaded workflow is listed", () => {
  const names = pm.response.json().workflows.map(w => w.name);
  pm.expect(names).to.include(pm.collectionVariables.get("workflow_name"));
});
""",
    ),
    request(
        "Submit workflow",
        "POST",
        "/api/workflow/submit",
        body={"workflow_name": "{{workflow_name}}", "params": {"1.color": 16711680}},
        tests="""
pm.test("task accepted", () => pm.response.to.have.status(200));
const body = pm.response.json();
pm.test("task id returned", () => pm.expect(body.task_id).to.be.a("string"));
pm.collectionVariables.set("task_id", body.task_id);
pm.collectionVariables.set("prompt_id", body.prompt_id);
""",
    ),
    request(
        "Task status",
        "GET",
        "/api/task/{{task_id}}",
        tests=poll_until_final(
            "Task status",
            "completed",
            then="""  pm.test("an output file is listed", () => pm.expect(task.outputs.length).to.be.above(0));
  pm.collectionVariables.set("output_url", task.outputs[0].url);
""",
        ),
    ),
    request(
        "Get output image",
        "GET",
        "{{output_url}}",
        tests="""
pm.test("image served", () => pm.response.to.have.status(200));
pm.test("as an image", () => pm.expect(pm.response.headers.get("Content-Type")).to.match(/^image\\//));
""",
    ),
    request(
        "Submit long run",
        "POST",
        "/api/workflow/submit",
        body={"workflow_name": "sd_txt2img_api.json", "params": {"3.steps": 400, "3.seed": -1}},
        tests="""
pm.test("long task accepted", () => pm.response.to.have.status(200));
pm.collectionVariables.set("long_prompt_id", pm.response.json().prompt_id);
pm.collectionVariables.set("long_task_id", pm.response.json().task_id);
""",
    ),
    request(
        "Queue",
        "GET",
        "/api/queue",
        tests="""
pm.test("queue listed", () => pm.response.to.have.status(200));
const q = pm.response.json();
pm.test("the long run is queued or running", () => pm.expect(q.total_running + q.total_pending).to.be.above(0));
""",
    ),
    request(
        "Interrupt",
        "POST",
        "/api/interrupt/{{long_prompt_id}}",
        tests="""
pm.test("interrupt accepted", () => pm.response.to.have.status(200));
""",
    ),
    request(
        "Interrupted task status",
        "GET",
        "/api/task/{{long_task_id}}",
        tests=poll_until_final("Interrupted task status", "interrupted"),
    ),
    request(
        "History",
        "GET",
        "/api/history?limit=10",
        tests="""
pm.test("history listed", () => pm.response.to.have.status(200));
const ids = pm.response.json().tasks.map(t => t.task_id);
pm.test("both tasks are in the history", () => {
  pm.expect(ids).to.include(pm.collectionVariables.get("task_id"));
  pm.expect(ids).to.include(pm.collectionVariables.get("long_task_id"));
});
""",
    ),
    request(
        "ViewComfy (current API): schedule a run",
        "POST",
        "/api/workflow/infer",
        form=[
            {"key": "prompt_id", "type": "text", "value": "{{vc_prompt_id}}"},
            {"key": "view_comfy_api_url", "type": "text", "value": "{{workflow_name}}"},
            {
                "key": "params",
                "type": "text",
                "value": '{"1-inputs-color": 255, "_1-node-class_type-info": "EmptyImage"}',
            },
        ],
        pre="""
pm.collectionVariables.set("vc_prompt_id", pm.variables.replaceIn("{{$guid}}"));
""",
        tests="""
pm.test("scheduled: 201 at once", () => pm.response.to.have.status(201));
const scheduled = pm.response.json().data;
pm.test("exactly prompt_id, message, workflow", () =>
  pm.expect(Object.keys(scheduled).sort()).to.eql(["message", "prompt_id", "workflow"]));
pm.test("the prompt id is ours", () =>
  pm.expect(scheduled.prompt_id).to.eql(pm.collectionVariables.get("vc_prompt_id")));
""",
    ),
    request(
        "ViewComfy (current API): results",
        "GET",
        "/api/workflow/infer/?prompt_ids={{vc_prompt_id}}",
        tests="""
pm.test("results answer 200", () => pm.response.to.have.status(200));
const [record] = pm.response.json();
const polls = Number(pm.collectionVariables.get("polls")) + 1;
pm.collectionVariables.set("polls", polls);
if (!["success", "error", "canceled"].includes(record.status) && polls < 100) {
  setTimeout(() => {}, 200);
  pm.execution.setNextRequest("ViewComfy (current API): results");
} else {
  pm.collectionVariables.set("polls", 0);
  pm.test("the run succeeded", () => pm.expect(record.status).to.eql("success"));
  pm.test("camelCase record", () => pm.expect(record).to.have.all.keys(
    "promptId", "status", "completed", "executionTimeSeconds", "prompt", "outputs", "errorData",
    "createdAt", "workflow", "clientId", "user"));
  pm.collectionVariables.set("vc_filepath", record.outputs[0].filepath);
}
""",
    ),
    request(
        "ViewComfy (current API): output by link (no credentials)",
        "GET",
        "{{vc_filepath}}",
        absolute=True,
        tests="""
pm.test("the signed link serves the image", () => pm.response.to.have.status(200));
pm.test("as an image", () => pm.expect(pm.response.headers.get("Content-Type")).to.match(/^image\\//));
""",
    ),
    request(
        "ViewComfy (current API): cancel",
        "POST",
        "/api/workflow/infer/cancel",
        body={"prompt_id": "{{vc_prompt_id}}", "view_comfy_api_url": "{{workflow_name}}"},
        tests="""
pm.test("cancel answers 201", () => pm.response.to.have.status(201));
pm.test("a finished run stays finished", () => pm.expect(pm.response.json().status).to.eql("success"));
""",
    ),
    request(
        "Delete workflow",
        "DELETE",
        "/api/workflow/{{workflow_name}}",
        tests='pm.test("workflow deleted", () => pm.response.to.have.status(200));',
    ),
    *V2_ITEMS,
]

COLLECTION = {
    "info": {
        "name": "ComfyGate API",
        "description": "ComfyGate: run ComfyUI workflows as a service. Set the collection variable baseUrl "
        "(default http://localhost:8000) and, if ComfyGate has API keys on, apiKey.",
        "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
    },
    "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}", "type": "string"}]},
    "variable": [
        {"key": "baseUrl", "value": "http://localhost:8000"},
        {"key": "apiKey", "value": ""},
        {"key": "workflow_name", "value": ""},
        {"key": "task_id", "value": ""},
        {"key": "prompt_id", "value": ""},
        {"key": "output_url", "value": ""},
        {"key": "long_task_id", "value": ""},
        {"key": "long_prompt_id", "value": ""},
        {"key": "polls", "value": "0"},
        {"key": "asset_id", "value": ""},
        {"key": "asset_hash", "value": ""},
        {"key": "idempotency_key", "value": ""},
        {"key": "job_id", "value": ""},
        {"key": "v2_output_url", "value": ""},
        {"key": "long_job_id", "value": ""},
        {"key": "vc_prompt_id", "value": ""},
        {"key": "vc_filepath", "value": ""},
    ],
    "item": ITEMS,
}

if __name__ == "__main__":
    OUT.write_text(json.dumps(COLLECTION, indent=2) + "\n")
    print(f"wrote {OUT}")
