"""Real servers for the tests: PostgreSQL, Redis (single and cluster), Kafka.

Each server runs on free loopback ports picked at run time, keeps its data in a
temporary directory and is stopped when the test session ends. A missing binary is a
skip locally (with the command that installs it) and a failure under `CI=true`.
"""
