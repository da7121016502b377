"""Does damping matter? The study of issue 16 (``wibergian damping``; docs/damping.md)."""
