"""Router: the public gRPC API; places sessions on nodes, keeps them there, proxies calls and streams."""
