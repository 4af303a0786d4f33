"""The operation registry is complete and honest (issue 10).

Every registered operation must have typed request and response models, a capability row, CPU
kernels for the modules it names, GPU kernels (or a written reason it has none) and a start-up
self-test case for each GPU kernel module; its routes must be in the OpenAPI schema with those
models. A new operation that forgets one of these fails here.
"""

from __future__ import annotations

import importlib

import pytest
from pydantic import BaseModel

from app.compute.capabilities import Capability
from app.compute.contract import KERNEL_MODULES, PARITY_TOLERANCE
from app.compute.selftest import selftest_modules
from app.operations import registry
from app.operations.base import Operation
from app.operations.models import Envelope

OPERATIONS = registry.operations()


def test_registry_finds_the_operations() -> None:
    expected = {"moment", "pv", "noise", "preview", "slice", "subvolume", "linewidth", "baseline", "stack",
                "isosurface", "image_preview", "image_full", "dataset_open", "files_list", "files_header",
                "js9_imstat", "js9_imfit", "js9_imview", "js9_specflux", "js9_imval", "js9_casa"}
    assert expected <= set(OPERATIONS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_is_complete(name: str) -> None:
    op: type[Operation] = OPERATIONS[name]
    assert op.__doc__ and op.__doc__.strip(), f"{name}: no docstring (it is the API docs' description)"
    assert isinstance(op.capability, Capability), f"{name}: no capability row"
    assert issubclass(op.Request, BaseModel) and issubclass(op.Response, BaseModel), f"{name}: untyped"
    assert issubclass(op.Response, Envelope), f"{name}: the response must carry the valid/error envelope"
    for model in (op.Request, op.Response):
        undocumented = [f for f, info in model.model_fields.items() if not info.description]
        assert not undocumented, f"{name}: {model.__name__} fields without a description: {undocumented}"
    cap = op.capability
    for module in cap.kernels:
        assert module in KERNEL_MODULES, f"{name}: {module} is not a contract kernel module"
        importlib.import_module(f"cpu_fallback.{module}")
    if cap.gpu_kernel:
        for module in cap.kernels:
            importlib.import_module(f"gpu_kernels.{module}")
            assert module in PARITY_TOLERANCE, f"{name}: no parity tolerance for {module}"
            assert module in selftest_modules(), f"{name}: no start-up self-test case for {module}"
    else:
        assert len(cap.no_gpu_reason) > 20, f"{name}: say why it has no GPU kernel"
    if cap.tier == "heavy" and not op.offers_task():
        assert op.routes == () or name.startswith("js9_"), f"{name}: a heavy operation must be offered as a task"


def test_a_capability_without_gpu_must_say_why() -> None:
    with pytest.raises(ValueError, match="must say why"):
        Capability(kernels=(), tier="interactive", gpu_kernel=False)


def test_every_route_is_in_the_schema_with_its_models(client) -> None:  # noqa: ANN001
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for name, op in OPERATIONS.items():
        for route in op.routes:
            operation = paths[route.path][route.method.lower()]
            assert {"401", "404", "422", "429"} <= set(operation["responses"]), (name, route.path)
            if route.render is None:
                ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/" + op.Response.__name__), (name, ref)
            if route.method == "POST":
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert body["$ref"].endswith("/" + op.Request.__name__), (name, body)
        if op.offers_task():
            assert f"/v1/tasks/{name}" in paths, name


def test_request_models_carry_examples(client) -> None:  # noqa: ANN001
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name, op in OPERATIONS.items():
        if op.routes and any(r.method == "POST" for r in op.routes):
            assert schemas[op.Request.__name__].get("examples"), f"{name}: {op.Request.__name__} has no example"


def test_capability_table_tells_where_views_run(client) -> None:  # noqa: ANN001
    caps = client.get("/v1/health").json()["capabilities"]
    for view in ("preview", "slice", "subvolume"):
        assert caps[view]["gpu_kernel"] is False and caps[view]["no_gpu_reason"]
    assert caps["moment"]["kernels"] == ["moments", "casa_moments", "moment_errors", "noise", "smooth_clip"]
    assert caps["moment"]["gpu_kernel"] is True
