FROM alpine
ENTRYPOINT ["my-app"]
FROM alpine
SHELL ["/bin/bash", "-c"]
CMD echo hi
