# infergrid: one image for `coordinator`, `worker`, `serve` and the tools (`apikey`, `credential`).
#
#   docker build -t infergrid:0.1.0 .
#   docker run --rm infergrid:0.1.0 coordinator --help
#
# Trade-offs (docs/deploy.md#the-image):
# - Two stages: the first has a compiler for native modules whose prebuilt binary cannot be
#   fetched (better-sqlite3 falls back to node-gyp), the image you run does not.
# - The sources run through tsx as on a developer's machine (bin/infergrid.js): there is no build
#   step, so what is tested is what ships. tsx caches its transforms under /tmp, which must be
#   writable (an emptyDir in Kubernetes, PrivateTmp under systemd).
# - ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script only downloads CUDA
#   libraries; its CPU binaries ship inside the package.
# - Not built in the repository's CI (it has no Docker engine); tests/unit/deploy-manifests.test.ts
#   checks the manifests that run it, not the image.

FROM node:20-bookworm-slim AS deps
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json .npmrc ./
# package.json's overrides point at this empty package (GPU builds of node-llama-cpp are not wanted)
COPY vendor ./vendor
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    ONNXRUNTIME_NODE_INSTALL=skip
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json .npmrc ./
COPY vendor ./vendor
COPY bin ./bin
COPY src ./src
COPY proto ./proto
# the demo models and the OCR steps that examples/demo-config.yaml and deploy/config name
COPY examples ./examples
COPY deploy/config ./deploy/config
# the image's own user (uid 1000, made by the node image): nothing in /app is writable by it but
# the demo config's SQLite cache folder (`serve --config examples/demo-config.yaml`)
RUN mkdir -p examples/.cache && chown node:node examples/.cache
USER node
# HTTP (KServe v2, OpenAI), gRPC, RPC (workers dial in)
EXPOSE 8000 8001 9000
# node runs as PID 1 and handles SIGTERM itself (coordinators and workers drain, then exit 0)
ENTRYPOINT ["node", "bin/infergrid.js"]
CMD ["--help"]
