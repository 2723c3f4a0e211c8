# The web page (app/streamlit_app.py) in a container, CPU only. Not built in CI: no container
# engine runs on the project's machines. Build and run from the project root:
#
#   docker build -t fakeproof-app .
#   docker run --rm -p 127.0.0.1:8501:8501 -v "$PWD/models:/app/models:ro" fakeproof-app
#
# then open http://localhost:8501. The checkpoints (models/*.pt, with their inference recipe) are
# mounted, not baked in; FAKEPROOF_MODELS names another folder.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
# The system ffmpeg decodes the uploads (imageio-ffmpeg's static binary is the fallback).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# CPU wheels of the torch and torchvision pins of requirements.txt first (about 1 GB smaller than
# the CUDA builds); `pip install .[app]` then finds those pins met (2.14.1+cpu satisfies ==2.14.1).
COPY requirements.txt requirements-app.txt pyproject.toml README.md ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        $(grep -E '^(torch|torchvision)==' requirements.txt)
COPY fakeproof ./fakeproof
COPY app ./app
RUN pip install ".[app]"

RUN useradd --create-home fakeproof && mkdir -p /app/models
USER fakeproof
ENV FAKEPROOF_MODELS=/app/models
EXPOSE 8501
# 0.0.0.0 inside the container; publish it on the host's 127.0.0.1 as above unless you mean to
# serve other machines.
CMD ["python", "-m", "streamlit", "run", "app/streamlit_app.py", "--server.address", "0.0.0.0", \
     "--server.port", "8501", "--server.headless", "true", "--browser.gatherUsageStats", "false", \
     "--client.toolbarMode", "viewer"]
