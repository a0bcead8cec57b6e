"""AWS plumbing for the sagemaker target: clients, the one error table, bounded call retries.

boto3 and botocore are imported here only, and this module only by targets/sagemaker.py
when a stage runs, so `orchestrate --help` and other targets never load them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from orchestrator.errors import (
    ConfigError,
    OrchestrateError,
    PermanentTargetError,
    RetryableTargetError,
)

IAM_DOC = "docs/sagemaker.md (IAM permissions)"

# AWS error codes that mean "try again shortly": throttling and server-side faults.
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)

# AWS error codes retrying cannot fix, with what the user should change.
PERMANENT_HINTS: dict[str, str] = {
    "ValidationException": "fix the value AWS names above (see docs/sagemaker.md for each config key)",
    "AccessDeniedException": f"grant the caller the IAM permissions listed in {IAM_DOC}, "
    "or use another profile or role",
    "AccessDenied": f"grant the caller the IAM permissions listed in {IAM_DOC}, or use another profile or role",
    "UnrecognizedClientException": "check your AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the role)",
    "InvalidClientTokenId": "check your AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or the role)",
    "ExpiredTokenException": "refresh your AWS credentials (e.g. `aws sso login`), then resume",
    "ExpiredToken": "refresh your AWS credentials (e.g. `aws sso login`), then resume",
    "ResourceLimitExceeded": "ask for a quota increase in Service Quotas, choose a smaller -C instance_type "
    "or -C instance_count, or delete unused endpoints",
    "LimitExceededException": "ask for a quota increase in Service Quotas, or delete unused resources",
    "ResourceInUse": "another operation holds this resource; wait for it, then resume",
    "ResourceNotFound": "the resource is gone; resume to create it again",
    "RepositoryNotFoundException": "check -C ecr_repository",
    "RepositoryPolicyNotFoundException": "check the ECR repository's policy",
    "ImageNotFoundException": "push the image again: resume from the push stage",
    "ModelError": "the model container answered with an error; see its CloudWatch logs "
    "(/aws/sagemaker/Endpoints/<endpoint>)",
    "ModelNotReadyException": "the endpoint is not ready; wait for InService, then resume",
}


def translate(exc: Exception, doing: str) -> OrchestrateError:
    """The most specific error (a TargetError, or ConfigError for missing credentials) for a botocore exception raised while `doing`."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message") or exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = f"{doing}: AWS said {code}: {message}"
        if code in RETRYABLE_CODES or (code not in PERMANENT_HINTS and status >= 500):
            return RetryableTargetError(text)
        return PermanentTargetError(text, hint=PERMANENT_HINTS.get(code, "see the AWS message above"))
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
        return ConfigError(
            f"{doing}: {exc}",
            hint="configure AWS credentials (a profile with -C profile=NAME, "
            "AWS_* environment variables, or an instance role)",
        )
    if isinstance(exc, NoRegionError):
        return ConfigError(f"{doing}: no AWS region", hint="give -C region=eu-west-1 or set AWS_REGION")
    if isinstance(exc, BotoConnectionError):
        return RetryableTargetError(f"{doing}: cannot reach AWS: {exc}")
    if isinstance(exc, BotoCoreError):
        return PermanentTargetError(f"{doing}: {exc}")
    raise TypeError(f"not a botocore exception: {exc!r}")


def error_code(exc: BaseException) -> str | None:
    """The AWS error code behind a translated error, if any."""
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code"))
    return None


class Aws:
    """boto3 clients for one profile and region; every call goes through `call`."""

    _lock = threading.Lock()
    _clients: ClassVar[dict[tuple[str, str, str], Any]] = {}

    def __init__(
        self, *, region: str = "", profile: str = "", log: Callable[[str], None] | None = None, attempts: int = 5
    ) -> None:
        self.profile = profile
        self.log = log or (lambda _m: None)
        self.attempts = attempts
        self.region = region or self._default_region()

    def _default_region(self) -> str:
        import boto3.session

        try:
            region: str | None = boto3.session.Session(profile_name=self.profile or None).region_name
        except Exception as exc:  # ProfileNotFound and friends
            raise translate(exc, "reading the AWS configuration") from exc
        region = region or os.environ.get("AWS_REGION")  # other SDKs' name; older botocore reads only the default
        if not region:
            raise ConfigError("no AWS region configured", hint="give -C region=eu-west-1 or set AWS_REGION")
        return str(region)

    def client(self, service: str) -> Any:
        key = (self.profile, self.region, service)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                import boto3.session
                from botocore.config import Config

                # Retries are ours (tenacity below), so botocore makes exactly one try.
                config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=10, read_timeout=70)
                try:
                    session = boto3.session.Session(profile_name=self.profile or None, region_name=self.region)
                    # The stubs type only literal service names; this one is chosen at run time.
                    client = session.client(service, config=config)  # type: ignore[call-overload]
                except Exception as exc:
                    raise translate(exc, f"creating the {service} client") from exc
                self._clients[key] = client
            return client

    def call(self, service: str, operation: str, **params: Any) -> Any:
        """One AWS call, retried briefly (with backoff) on throttling and 5xx; raises TargetError."""
        method = getattr(self.client(service), operation)
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=3.0, jitter=0.2),
            retry=retry_if_exception_type(RetryableTargetError),
            before_sleep=lambda state: self.log(
                f"{service} {operation}: {state.outcome.exception() if state.outcome else ''}; retrying"
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    return method(**params)
                except Exception as exc:
                    if type(exc).__module__.startswith(("botocore", "boto3")) or hasattr(exc, "response"):
                        raise translate(exc, f"{service} {operation}") from exc
                    raise
        raise AssertionError("unreachable")


def is_not_found(exc: OrchestrateError) -> bool:
    """SageMaker says "Could not find ..." with a ValidationException for a missing resource."""
    code = error_code(exc)
    text = str(exc.__cause__ or exc)
    return code in (
        "ValidationException",
        "ResourceNotFound",
        "RepositoryNotFoundException",
        "ImageNotFoundException",
    ) and ("not find" in text or "not found" in text or "does not exist" in text or code != "ValidationException")
