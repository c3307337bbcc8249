"""The overlay engine: plain Python, no Ansible import; the modules and the agent run it (ARCHITECTURE.md)."""
