"""The web page: plain HTML, CSS and JavaScript modules, served as they are by the web
listener (``server/webpage.py``). No build step, nothing fetched from elsewhere."""
