"""worldwalk.stream.cluster: `worldwalk serve --cluster`, sessions on a Ray Serve cluster.

    gateway.py       the ingress deployment: page, signaling, token/Origin/Host, admission
    session_host.py  the deployment whose replicas run sessions (one long call per session)
    relay.py         a session host's end of a websocket the gateway holds
    snapshots.py     the store of each walk's latest chunk boundary (failover)
    walk_hosts.py    the store's part: where each walk runs, walks waiting for their player
    drains.py        the store's part: session hosts handing their walks off
    spectator_mail.py  the store's part: a spectator's signaling to the replica hosting its walk
    app.py           the app, start/stop (its Serve-config builder: stream/cluster_deploy.py)
    status.py        `worldwalk cluster status`, `drain`, `token`
    security.py      Ray's token authentication required to start or join a cluster
    proxy_limits.py  the middleware in Serve's HTTP proxy that bounds websocket messages
    config.py        ClusterConfig; flags.py: the command-line flags

Needs the `cluster` extra (`pip install "worldwalk[cluster]"`); nothing here is imported by
the single-process `worldwalk serve`.
"""
