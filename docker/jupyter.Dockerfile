# JupyterLab with gradelab installed, for the `jupyter` service of
# docker-compose.yml. Build context: the repository root.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN useradd --create-home --uid 1000 student
WORKDIR /home/student/gradelab

# The pinned versions the test suite runs with, then the project itself.
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY gradelab ./gradelab
RUN pip install --no-deps -e .
COPY --chown=student notebooks ./notebooks

USER student
EXPOSE 8888
# Without --ServerApp.token, JupyterLab makes a random login token and prints
# it in the log: `docker compose logs jupyter`.
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", \
     "--notebook-dir=/home/student/gradelab/notebooks"]
