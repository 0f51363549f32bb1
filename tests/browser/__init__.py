"""Browser tests: real Chromium (Debian's /usr/bin/chromium) driven by Playwright."""
