"""The Label Studio gateway: the only code that imports label-studio-sdk or calls Label Studio.

``client`` (every API call), ``config`` (label config parsing and regions, through the SDK's
LabelInterface), ``sync`` (Label Studio's annotations -> the store), ``local`` (a local server for the
quickstart and the tests).
"""
from .client import LabelStudioAPI, api_status, describe_error, is_access_error, is_labelstudio_error

__all__ = ["LabelStudioAPI", "api_status", "describe_error", "is_access_error", "is_labelstudio_error"]
