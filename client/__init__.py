"""Python client of the feature store service: `FeatureStore(url, api_key=None)`.

Results come back as pandas DataFrames typed by the service's schema; errors as
the service's own error classes (`common.errors`), rebuilt from its JSON.
"""
from common.errors import (BackendUnavailable, EtlFailed, EtlTampered, FeatureStoreError, InvalidEtl,
                           InvalidInput, InvalidQuery, NotFound, ResultTooLarge, SourceIncompatible,
                           TrainServeMismatch, UpstreamUnavailable)

from client.errors import (IncompleteStream, SchemaMismatch, ServiceError, ServiceTimeout, ServiceUnreachable,
                           UnexpectedResponse, error_class)
from client.store import FeatureStore, Page, TrainingResult

__all__ = [
    "FeatureStore", "TrainingResult", "Page",
    "FeatureStoreError", "InvalidInput", "InvalidQuery", "InvalidEtl", "ResultTooLarge", "NotFound",
    "SchemaMismatch", "TrainServeMismatch", "SourceIncompatible", "EtlFailed", "EtlTampered", "UpstreamUnavailable", "BackendUnavailable",
    "ServiceError", "UnexpectedResponse", "IncompleteStream", "ServiceUnreachable", "ServiceTimeout", "error_class",
]
