"""`birdsed review`: listen to detections and verify them in the browser. verdicts.py keeps the verdicts (SQLite),
queue.py chooses the clips, media.py renders a clip's picture and sound, app.py is the web app over them."""
