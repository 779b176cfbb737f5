"""The master process: listeners, supervision loop, and (later) scoreboard and systemd."""
