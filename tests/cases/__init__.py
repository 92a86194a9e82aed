"""Case tables and builders shared by several test modules (data, no tests: a test module never
imports another test module)."""
