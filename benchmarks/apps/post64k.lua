-- wrk script: every request is a POST of a 64 KiB body (apps/upload.py reads it all).
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
