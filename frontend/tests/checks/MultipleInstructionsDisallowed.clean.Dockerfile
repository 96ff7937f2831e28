FROM alpine
CMD ["a"]
FROM alpine
CMD ["b"]
