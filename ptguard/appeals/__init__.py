"""Appeal assembly: letters whose sentences cite the chart, exhibits, the PDF packet, write-back and the case record."""
