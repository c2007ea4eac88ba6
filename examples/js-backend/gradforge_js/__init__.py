"""gradforge-js: a JavaScript backend for gradforge, written against gradforge.plugin_api only."""
