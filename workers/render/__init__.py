"""The render process, complete: its protocol, the one `RenderRequest`, the SSRF guard (pure; the
main process uses it at submission too), the loop, Chromium, the guarded fetcher and HTML to text."""
