"""The central node: state, authentication, storage, sessions and the asyncio server."""
