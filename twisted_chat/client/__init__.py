"""The terminal chat client: session logic, server and peer links, console, wiring."""
