# Serving image for a registered model version (the serving issue fills in the server).
# Build: docker build --build-arg BASE_IMAGE=python:3.11-slim-bookworm -t mlgate-serve .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="mlgate-serve" \
      org.opencontainers.image.description="XGBoost model served by mlgate" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin mlgate
USER 10001
WORKDIR /srv
EXPOSE 8080
CMD ["python3", "-c", "print('mlgate serving image: the model server lands with the serving issue')"]
