"""Offline l10n corpus."""
