/** Shipyard's icon: a ship on a wave, drawn in the theme's icon colour. */
import { LabIcon } from '@jupyterlab/ui-components';

const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M11 2h2v3h4l1 5H6l1-5h4z"/>
    <path d="M3 12h18l-2.6 5.2c-.5.1-1 .3-1.4.6-.6.4-1.2.6-2 .6s-1.4-.2-2-.6a3.6 3.6 0 0 0-4 0c-.6.4-1.2.6-2 .6-.3 0-.6 0-.9-.1z"/>
    <path d="M2 20.2c.8.5 1.8.8 3 .8s2.2-.3 3-.8c.8.5 1.8.8 3 .8s2.2-.3 3-.8c.8.5 1.8.8 3 .8s2.2-.3 3-.8V22c-1 .5-2 .8-3 .8s-2.2-.3-3-.8c-.8.5-1.8.8-3 .8s-2.2-.3-3-.8c-.8.5-1.8.8-3 .8s-2-.3-3-.8z"/>
  </g>
</svg>`;

export const shipyardIcon = new LabIcon({ name: 'shipyard:ship', svgstr });
