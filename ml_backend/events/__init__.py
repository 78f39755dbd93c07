"""Webhook events: ``checks`` reads a payload (or says why it cannot), ``worker`` drains the stored
events in the background."""
from .checks import ANNOTATION_EVENTS, BadEvent, check_event, deleted_ids, int_id, project_id_of

__all__ = ["ANNOTATION_EVENTS", "BadEvent", "check_event", "deleted_ids", "int_id", "project_id_of"]
