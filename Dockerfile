# dashcast container: build the single binary with Bun (from npm), ship it on a minimal base.
# docker build -t dashcast . && docker run -p 8080:8080 dashcast

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json bunfig.toml ./
COPY src ./src
RUN npm run build && ./dist/dashcast --version
# The cache folder for the volume, made here because the final base has no shell to run mkdir.
RUN mkdir -p /out/data

# The Bun binary needs glibc and libstdc++, which distroless "cc" provides; it has no shell and no curl.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /home/nonroot
COPY --from=build /src/dist/dashcast /usr/local/bin/dashcast
# Owned by nonroot (65532; numeric, so COPY needs no passwd lookup): Docker copies a mount point's
# owner and mode from the image into a new, empty named volume, so SQLite can create its file
# there. Without this folder a new volume is root:root 0755 and the cache cannot be opened.
# Bind mounts get nothing from the image: a host folder must be writable by 65532 itself.
# It must come before VOLUME: the classic builder drops changes made to a volume path after it.
COPY --from=build --chown=65532:65532 /out/data /home/nonroot/data
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    CACHE_PATH=/home/nonroot/data/dashcast.sqlite
USER nonroot:nonroot
EXPOSE 8080
VOLUME ["/home/nonroot/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/dashcast", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/dashcast"]
