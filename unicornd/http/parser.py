"""The request parser: fed bytes, it hands back request heads, body data and end-of-message.

INTERFACE (used by connection.py and every worker class; keep it stable):

    opts = ParserOptions.from_config(cfg)           # once per worker
    p = RequestParser(opts, proxy_allowed=True)     # once per connection
    p.receive_data(data)                            # b"" means the peer closed (EOF)
    ev = p.next_event()
        -> Request            the head of the next request (first event of a message)
        -> bytes              a non-empty piece of decoded body (chunked framing removed)
        -> EndOfMessage       body done; .trailers is a list of (NAME, value)
        -> NEED_DATA          feed more bytes, then call again
        -> CLOSED             EOF arrived cleanly between two requests
        raises errors.HTTPError subclass on bad input (NoMoreData for EOF mid-request)
    p.start_next_request()  # after EndOfMessage: parse the next (pipelined) request
    p.buffered              # bytes received but not yet consumed (len() is cheap)
"""
