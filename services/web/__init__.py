"""The web app: patient consent portal and compliance console (server-rendered, Starlette).

It reaches data only through ciphercare's own gRPC API (the Python SDK) with the
signed-in user's access token, so every access rule is the services' own.
"""
