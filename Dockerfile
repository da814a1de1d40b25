# dashcast container: build the single binary with Bun (from npm), ship it on a minimal base.
# docker build -t dashcast . && docker run -p 8080:8080 dashcast

FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json bunfig.toml ./
COPY src ./src
RUN npm run build && ./dist/dashcast --version

# The Bun binary needs glibc and libstdc++, which distroless "cc" provides; it has no shell and no curl.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /home/nonroot
COPY --from=build /src/dist/dashcast /usr/local/bin/dashcast
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    CACHE_PATH=/home/nonroot/data/dashcast.sqlite
USER nonroot:nonroot
EXPOSE 8080
VOLUME ["/home/nonroot/data"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 CMD ["/usr/local/bin/dashcast", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/dashcast"]
